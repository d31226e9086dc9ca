"""Process supervision: servers as child processes (the service, MLflow, Prefect), the team stack under
the home, and which Prefect API a command reports to. The CLI and the flows start processes here; it
imports no flow, service or model code."""
