"""Configuration as code: `python manage.py gateway_config apply FILE` and `gateway_config export`.

`native` reads the gateway's own format, `litellm` a LiteLLM proxy config.yaml, both into a
`plan.ConfigPlan`; `services` applies a plan and exports the database; `sections` lets other
apps add keys to org and project entries.
"""
