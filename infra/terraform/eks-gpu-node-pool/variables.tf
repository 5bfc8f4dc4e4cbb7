variable "region" {
  description = "AWS region of the EKS cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster that runs Kubeflow Pipelines."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the GPU nodes (in AZs that offer the instance types)."
  type        = list(string)
}

variable "instance_types" {
  description = "GPU instance types, one NVIDIA GPU each (g5.xlarge: A10G 24 GB; g6.xlarge: L4 24 GB)."
  type        = list(string)
  default     = ["g5.xlarge", "g6.xlarge"]
}

variable "capacity_type" {
  description = "ON_DEMAND or SPOT (retries in the pipeline make SPOT usable for features/finetune)."
  type        = string
  default     = "ON_DEMAND"
  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.capacity_type)
    error_message = "capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "max_size" {
  description = "Most GPU nodes at once (the pipeline's parallelism is a sensible value)."
  type        = number
  default     = 3
  validation {
    condition     = var.max_size >= 1
    error_message = "max_size must be at least 1."
  }
}

variable "disk_size_gb" {
  description = "Root volume per node: the CUDA image is large (see docs/infra.md)."
  type        = number
  default     = 100
}
