"""Loopback HTTP fakes (Twilio, delivery-report receiver) for end-to-end tests."""
