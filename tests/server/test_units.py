"""The server's unit tests are in the test module named after each server module."""
