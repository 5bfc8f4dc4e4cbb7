output "node_group_name" {
  value = aws_eks_node_group.gpu.node_group_name
}

output "autoscaling_group_name" {
  value = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name
}

output "node_selector" {
  description = "What pods must select (the pipeline compiles this node selector)."
  value       = local.pool_labels
}
