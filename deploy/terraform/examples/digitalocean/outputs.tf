output "cluster_id" {
  description = "ID of the cluster: doctl kubernetes cluster kubeconfig save <cluster_id>."
  value       = module.cluster.cluster_id
}

output "vpc_id" {
  description = "ID of the cluster's VPC."
  value       = module.cluster.vpc_id
}

output "release_status" {
  description = "Status of the tally Helm release."
  value       = module.tally.status
}

output "kubeconfig" {
  description = "kubeconfig of the cluster (terraform output -raw kubeconfig > kubeconfig)."
  value       = module.cluster.kubeconfig
  sensitive   = true
}
