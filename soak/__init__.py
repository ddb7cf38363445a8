"""`python -m soak` (`make soak`): a bounded soak of the whole stack on the loopback interface."""
