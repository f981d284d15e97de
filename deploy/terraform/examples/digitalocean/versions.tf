terraform {
  required_version = ">= 1.9"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.67"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
  }

  # State in a DigitalOcean Spaces bucket through the S3 backend. The settings live in a
  # partial configuration file (backend.hcl.example), the keys in the environment:
  #   terraform init -backend-config=backend.hcl
  backend "s3" {}
}
