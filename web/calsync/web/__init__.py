"""The web calendar at /app/: static files, no build step, nothing fetched from elsewhere."""
