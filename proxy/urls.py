from django.urls import path, re_path

from proxy import views

urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("completions", views.CompletionsView.as_view(), name="completions"),
    path("embeddings", views.EmbeddingsView.as_view(), name="embeddings"),
    path("responses", views.ResponsesView.as_view(), name="responses"),
    path("models", views.ModelsView.as_view(), name="models"),
    # Model names may hold slashes (`groq/llama-3.1-8b-instant`).
    re_path(r"^models/(?P<model_id>.+)$", views.ModelView.as_view(), name="model"),
    path("messages", views.MessagesView.as_view(), name="messages"),
    # Last, so it is only tried for paths that match no route.
    re_path(r"", views.UnknownPathView.as_view(), name="unknown-path"),
]
