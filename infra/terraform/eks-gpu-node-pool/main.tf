# A GPU node group for bakeoff's features and finetune steps on an existing EKS cluster.
# - Scales from ZERO: idle, it costs nothing; the cluster-autoscaler adds a node when a pipeline pod
#   that requests nvidia.com/gpu is pending, and removes it after the run.
# - Tainted nvidia.com/gpu=present:NoSchedule so only pods that tolerate it (the pipeline's GPU steps,
#   which compile `add_toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")`) land here.
# - Labelled bakeoff.io/pool=gpu: the pipeline's node selector (pipelines/settings.py gpu_node_selector).
# tests/infra/test_terraform.py checks all three against the compiled pipeline.

locals {
  pool_labels = {
    "bakeoff.io/pool" = "gpu"
  }
  gpu_taint = {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE" # EKS API spelling of NoSchedule
  }
  # Scale-from-zero hints for the cluster-autoscaler: with no node running it cannot see the labels,
  # taint or GPU count, so it reads them from these tags on the node group's Auto Scaling group.
  autoscaler_tags = {
    "k8s.io/cluster-autoscaler/enabled"                                = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}"                    = "owned"
    "k8s.io/cluster-autoscaler/node-template/label/bakeoff.io/pool"    = "gpu"
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"     = "present:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu" = "1"
  }
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "gpu_node" {
  name               = "${var.cluster_name}-bakeoff-gpu-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
}

resource "aws_iam_role_policy_attachment" "gpu_node" {
  for_each = toset([
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
  ])
  role       = aws_iam_role.gpu_node.name
  policy_arn = each.value
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = var.cluster_name
  node_group_name = "bakeoff-gpu"
  node_role_arn   = aws_iam_role.gpu_node.arn
  subnet_ids      = var.subnet_ids

  # EKS-optimised Amazon Linux 2023 with the NVIDIA driver and container toolkit preinstalled.
  ami_type       = "AL2023_x86_64_NVIDIA"
  instance_types = var.instance_types
  capacity_type  = var.capacity_type
  disk_size      = var.disk_size_gb

  scaling_config {
    min_size     = 0
    desired_size = 0
    max_size     = var.max_size
  }

  update_config {
    max_unavailable = 1
  }

  labels = local.pool_labels

  taint {
    key    = local.gpu_taint.key
    value  = local.gpu_taint.value
    effect = local.gpu_taint.effect
  }

  tags = {
    "app.kubernetes.io/part-of" = "bakeoff"
  }

  # The autoscaler owns the current size; Terraform must not reset it to 0 on every apply.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.gpu_node]
}

resource "aws_autoscaling_group_tag" "autoscaler" {
  for_each               = local.autoscaler_tags
  autoscaling_group_name = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
