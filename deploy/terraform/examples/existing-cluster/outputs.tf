output "release_status" {
  description = "Status of the tally Helm release."
  value       = module.tally.status
}

output "namespace" {
  description = "Namespace of the release."
  value       = module.tally.namespace
}
