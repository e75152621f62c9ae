"""Network presets and the exchange of weights between torch and Flower records."""
