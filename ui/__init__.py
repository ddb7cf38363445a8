"""The Gradio chat front end; it talks to the api over HTTP only."""
