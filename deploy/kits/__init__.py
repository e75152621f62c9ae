"""Made by `oncofed provision`, read by both sides: the CA and certificates, site keys, kits and their files, the release FAB."""
