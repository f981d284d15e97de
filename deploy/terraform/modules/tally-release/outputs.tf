output "release_name" {
  description = "Name of the Helm release."
  value       = helm_release.this.name
}

output "namespace" {
  description = "Namespace the chart is installed in."
  value       = helm_release.this.namespace
}

output "status" {
  description = "Status of the release (deployed after a successful apply)."
  value       = helm_release.this.status
}

output "chart_version" {
  description = "Version of the chart that was installed."
  value       = helm_release.this.metadata.version
}

output "app_version" {
  description = "appVersion of the installed chart."
  value       = helm_release.this.metadata.app_version
}

output "chart_values" {
  description = "The values the module passed before extra_values, as YAML."
  value       = yamlencode(local.chart_values)
}
