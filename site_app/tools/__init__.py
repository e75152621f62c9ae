"""The site's own tools, run by hospital staff outside any federated round: data check, predict, site report, model export."""
