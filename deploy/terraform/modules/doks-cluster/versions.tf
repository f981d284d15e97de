terraform {
  # 1.9: a variable's validation may refer to other variables (max_nodes >= min_nodes).
  required_version = ">= 1.9"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.67"
    }
  }
}
