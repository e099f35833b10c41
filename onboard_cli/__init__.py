"""`onboard`: the IoT onboarding portal's REST API from a terminal. Imports nothing from Django."""
