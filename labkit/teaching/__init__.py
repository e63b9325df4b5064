"""The teaching layer: notebook helpers, the failure-injection widgets and the headless notebook runner."""
