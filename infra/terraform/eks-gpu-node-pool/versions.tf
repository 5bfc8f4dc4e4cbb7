terraform {
  # use_lockfile (S3-native state locking) in the backend needs Terraform 1.10 or later.
  required_version = ">= 1.10"

  # Remote state in S3, configured at init time (partial configuration: no bucket or account id in git):
  #   terraform init -backend-config=backend.hcl      (copy backend.hcl.example first)
  backend "s3" {}

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Exact pin; .terraform.lock.hcl records the same version and its package checksums.
      version = "5.100.0"
    }
  }
}

provider "aws" {
  region = var.region
}
