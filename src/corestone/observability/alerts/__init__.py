"""Alerting: rules over the service's own metrics, states, silences and notifications."""
