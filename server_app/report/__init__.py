"""What a coordinator and a clinician read: the federation report (HTML, JSON, CSV), the model card, the site table."""
