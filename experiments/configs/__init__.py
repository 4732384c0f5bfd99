"""ml_collections config files, one per experiment kind; the argument after ':' names a preset."""
