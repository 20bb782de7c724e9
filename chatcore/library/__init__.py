"""Finding, fitting and fetching models: folders on disk, the Hugging Face Hub, downloads, the person's registry file."""
