"""Config as code: `manage.py gateway_config apply FILE` / `export`."""
