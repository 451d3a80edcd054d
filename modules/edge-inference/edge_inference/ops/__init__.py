"""Operations: metrics, health watches, telemetry, live (twin) settings."""
