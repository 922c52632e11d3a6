"""Operations: readiness, metrics, logs, systemd notification."""
