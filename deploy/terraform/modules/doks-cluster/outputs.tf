output "cluster_id" {
  description = "ID of the Kubernetes cluster (doctl kubernetes cluster kubeconfig save ID)."
  value       = digitalocean_kubernetes_cluster.this.id
}

output "cluster_name" {
  description = "Name of the Kubernetes cluster."
  value       = digitalocean_kubernetes_cluster.this.name
}

output "kubernetes_version" {
  description = "Kubernetes version slug the cluster was created with."
  value       = digitalocean_kubernetes_cluster.this.version
}

output "vpc_id" {
  description = "ID of the cluster's VPC."
  value       = digitalocean_vpc.this.id
}

output "endpoint" {
  description = "URL of the cluster's API server."
  value       = digitalocean_kubernetes_cluster.this.endpoint
}

output "cluster_ca_certificate" {
  description = "Base64-encoded CA certificate of the API server."
  value       = digitalocean_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate
  sensitive   = true
}

output "token" {
  description = "Short-lived API token for the helm and kubernetes providers."
  value       = digitalocean_kubernetes_cluster.this.kube_config[0].token
  sensitive   = true
}

output "kubeconfig" {
  description = "A complete kubeconfig for the cluster (its token expires; doctl renews it)."
  value       = digitalocean_kubernetes_cluster.this.kube_config[0].raw_config
  sensitive   = true
}
