"""cnn: train an animal photo classifier from scratch, publish it to the Hub, serve it with Gradio.

    from cnn import create_model, Classifier
"""
__version__ = "0.1.0"
DISTRIBUTION = "cnn-animals"   # the name pip installs it by (pyproject.toml); the model card's library_name
REPOSITORY = "https://github.com/cnn-animals/cnn"   # where the package lives (pyproject.toml's [project.urls])

from .models import create_model, list_models  # noqa: E402

__all__ = ["Classifier", "create_model", "list_models", "__version__"]


def __getattr__(name: str):
    # Classifier pulls in the Hub client; import it only when asked for (fast `import cnn`).
    if name == "Classifier":
        from .inference import Classifier
        return Classifier
    raise AttributeError(name)
