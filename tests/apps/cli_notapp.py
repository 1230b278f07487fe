"""Not an app: `ardiq run apps.cli_notapp:app` must say so and exit 2."""

app = 42
