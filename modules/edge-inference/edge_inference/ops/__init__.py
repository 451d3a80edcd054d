"""Operations: the alarm registry, health monitors, telemetry (message form and publisher), live settings, metrics."""
