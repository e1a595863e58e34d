"""The inference path: photo → preprocess → model → top-k labels (and a Grad-CAM view of why).

    clf = Classifier.from_pretrained("model")           # a folder, or "user/name[@revision]"
    clf.predict("cat.jpg", k=3)                         # [("cat", 0.91), ("dog", 0.05), ...]
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import hub, ood
from .data import ImageSource, eval_view, image_to_uint8, load_image
from .metrics import calibrate

log = logging.getLogger(__name__)

UNSURE_BELOW = 0.5  # for models whose config has no measured threshold: where a calibrated model is a coin toss
UNKNOWN, UNSURE = "unknown", "unsure"   # the two warnings an answer can carry (Classifier.warning)
DISPLAY_SIDE = 512  # a Grad-CAM map and overlay are at most this long a side: never the photo's full resolution


class Classifier:
    """A loaded model with its labels and preprocessing, ready to classify single photos."""

    def __init__(self, model: nn.Module, config: dict[str, Any], source: str = "", folder: str | os.PathLike | None = None,
                 channels_last: bool = True):
        # Served in the channels-last (NHWC) layout by default: the CPU's convolutions (oneDNN) run faster in it
        # (the bundled model's predict 1.1–1.2× in two sessions' runs of bench/latency.py), with the same answers to float rounding.
        self.channels_last = channels_last
        self.model = (model.to(memory_format=torch.channels_last) if channels_last else model).eval()
        self.config = config
        self.source = source
        self.folder = folder            # the model folder it was loaded from (a Hub snapshot, or a local folder)
        self.labels: list[str] = list(config["label_names"])
        pre = config["pretrained_cfg"]
        self.image_size: int = pre["input_size"][-1]
        self.resize_side: int = round(self.image_size / pre["crop_pct"])
        self.mean, self.std = pre["mean"], pre["std"]
        self.tta_flip: bool = pre.get("tta_flip", False)
        self.blur_sigma: float = pre.get("blur_sigma", 0.0)    # test-time softening (cnn.data.eval_view)
        self.temperature: float = pre.get("temperature", 1.0)
        found = config.get("metrics", {})
        # Over any of `unknown_thresholds` (cnn.ood's scores: top probability, energy, feature distance to the
        # training photos) a photo does not look like any label ("none of the ten"); under `unsure_below` it
        # looks like one, but the guess is more likely wrong than right.
        self.unknown_thresholds: dict[str, float] = ood.thresholds_from_config(found)
        self.unsure_below: float = found.get("unsure_below", UNSURE_BELOW)
        self.head: nn.Linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        self.detector: ood.KnnDetector | None = self._stored("knn", ood.KnnDetector, "the feature distance")
        self.probe: ood.ProbeDetector | None = self._stored("probe", ood.ProbeDetector, "the probe")
        # Grad-CAM hooks and gradients live on a private copy, one map at a time, so that predictions
        # served beside it (the app runs two requests at once) never see them.
        self._cam_model: nn.Module | None = None
        self._cam_lock = threading.Lock()

    def _stored(self, name: str, kind, words: str):
        """The stored detector behind score `name` when the model's rule uses it; None otherwise, and when it
        cannot be loaded (the rule then goes on with its other scores, said in the log)."""
        if name not in self.unknown_thresholds:
            return None
        try:
            if self.folder is None:
                raise ood.DetectorError("the model was not loaded from a folder")
            return kind.load(self.folder, self.head.in_features)
        except ood.DetectorError as e:   # still serve, with the other scores
            del self.unknown_thresholds[name]
            log.warning("'none of the labels' goes on without %s: %s", words, e)
            return None

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, revision: str | None = None,
                        channels_last: bool = True) -> "Classifier":
        """Load a local model folder or a Hub repo id ('user/name', optionally '@revision')."""
        folder, source = hub.resolve(str(model_id), revision)
        model, config = hub.load_pretrained(folder)
        return cls(model, config, source, folder, channels_last)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def decode(self, image: ImageSource) -> Image.Image:
        """The photo decoded by the one rule every classifying path shares (the pixel budget, JPEG decoded at
        reduced scale down to the resize side), so /predict and /predict_batch see the same pixels."""
        return load_image(image, draft_side=self.resize_side)

    def prepare(self, image: ImageSource) -> torch.Tensor:
        """3×R×R uint8 (R = the resize side): the photo resized and centre-cropped as in training's cache.
        Small whatever the photo's size, so a batch can hold many while decoding one photo at a time."""
        return self._resized(self.decode(image))

    def _resized(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(image_to_uint8(img, self.resize_side))

    def preprocess(self, image: ImageSource | torch.Tensor) -> torch.Tensor:
        """1×3×S×S float tensor: the same resize, centre crop and softening as the export measured the model
        with (`image` may be `prepare`'s tensor already)."""
        x = (image if isinstance(image, torch.Tensor) else self.prepare(image))[None]
        return eval_view(x, self.image_size, self.mean, self.std, self.blur_sigma)

    def probabilities(self, image: ImageSource) -> torch.Tensor:
        """Every label's calibrated probability for one photo."""
        return self.probabilities_batch([image])[0]

    @property
    def unknown_below(self) -> float:
        """The top probability under which a photo looks like none of the labels (0: that score is not used)."""
        return round(1 - self.unknown_thresholds["probability"], 6) if "probability" in self.unknown_thresholds else 0.0

    @unknown_below.setter
    def unknown_below(self, value: float) -> None:
        self.unknown_thresholds["probability"] = 1 - value

    def probabilities_batch(self, images: Sequence[ImageSource | torch.Tensor]) -> torch.Tensor:
        """N×labels calibrated probabilities for several photos (or `prepare`'s tensors), in one forward pass."""
        return self.analyse_batch(images)[0]

    def analyse_batch(self, images: Sequence[ImageSource | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N×labels calibrated probabilities, N booleans: looks like none of the labels), from one forward pass
        (two with flip TTA)."""
        return self.analyse_tensor(torch.cat([self.preprocess(image) for image in images]))

    @property
    def reads_features(self) -> bool:
        """Whether the "none of the ten" rule needs the penultimate features: the feature distance and the probe do
        (cnn.ood.feature_tap hooks the model's last Linear layer, so the model must stay an nn.Module with one);
        the top probability and the energy read the answer alone, so any wrapped, frozen or compiled model can
        serve them."""
        return bool({"knn", "probe"} & self.unknown_thresholds.keys())

    @torch.inference_mode()
    def analyse_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`analyse_batch` for photos already preprocessed (N×3×S×S, normalised)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ood.feature_tap(self.model) if self.reads_features else contextlib.nullcontext([]) as features:
            raw, logits = ood.forward_views(self.model, x, self.tta_flip)
        probs = calibrate(raw, self.temperature)
        return probs, self.unknown(probs, logits, sum(features) / len(features) if features else torch.zeros(len(x), 0))

    def unknown(self, probs: torch.Tensor, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """For calibrated probabilities, logits and penultimate features already computed (cnn.ood.Outputs):
        which photos look like none of the labels (the model's own rule, cnn.ood)."""
        scores = ood.compute_scores(self.unknown_thresholds, probs, logits, features, self.detector, self.probe)
        if not scores:   # a model without a "none of the ten" rule
            return torch.zeros(len(probs), dtype=torch.bool)
        return ood.unknown_mask(scores, self.unknown_thresholds)

    def is_known(self, image: ImageSource) -> bool:
        """True when the photo looks like one of the model's labels (not "none of the ten")."""
        return not bool(self.analyse_batch([image])[1][0])

    def known(self, probs: torch.Tensor | Sequence[float], unknown: bool | None = None) -> bool:
        """`is_known` for one photo already analysed (`unknown` from `analyse_batch`); given the probabilities
        alone, the top-probability rule alone."""
        if unknown is not None:
            return not unknown
        return float(max(probs)) >= self.unknown_below

    def warning(self, probs: torch.Tensor | Sequence[float], unknown: bool | None = None) -> str:
        """UNKNOWN when one photo looks like none of the labels, UNSURE when the best guess is more likely
        wrong than right, else "": the one rule the app, the batch table and the reports share."""
        if not self.known(probs, unknown):
            return UNKNOWN
        return UNSURE if float(max(probs)) < self.unsure_below else ""

    def predict(self, image: ImageSource, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely labels with their probabilities, highest first."""
        probs = self.probabilities(image)
        top = probs.topk(min(k, len(self.labels)))
        return [(self.labels[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]

    def gradcam(self, image: ImageSource, label: str | None = None) -> np.ndarray:
        """Grad-CAM heat-map (H×W floats in [0, 1], the photo's display size: its own, shrunk to fit
        DISPLAY_SIDE) for `label` (default: the top prediction), from the last convolution's activations
        and gradients on the model-sized input."""
        img = self.decode(image)
        return self._gradcam(self._resized(img), display_size(img.size), label)

    def _gradcam(self, x: torch.Tensor, size: tuple[int, int], label: str | None) -> np.ndarray:
        x = self.preprocess(x)
        with self._cam_lock:
            if self._cam_model is None:
                self._cam_model = copy.deepcopy(self.model)
            model = self._cam_model
            last_conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
            saved: dict[str, torch.Tensor] = {}

            def keep(_module, _inputs, output):
                output.retain_grad()
                saved["act"] = output

            handle = last_conv.register_forward_hook(keep)
            try:
                with torch.enable_grad():
                    logits = model(x)
                    index = self.labels.index(label) if label else int(logits.argmax(1))
                    logits[0, index].backward()
            finally:
                handle.remove()
                model.zero_grad(set_to_none=True)
        act, grad = saved["act"], saved["act"].grad
        cam = torch.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True)).detach()
        cam = cam / cam.max().clamp_min(1e-8)
        return _uncrop(cam[0, 0].numpy(), size, self.image_size, self.resize_side)

    def overlay(self, image: ImageSource, label: str | None = None, alpha: float = 0.5) -> Image.Image:
        """The photo at its display size with its Grad-CAM heat-map blended on top (red = where the model looked)."""
        import matplotlib

        img = self.decode(image)
        shown = img.resize(display_size(img.size), Image.BILINEAR, reducing_gap=3.0)
        heat = matplotlib.colormaps["jet"](self._gradcam(self._resized(img), shown.size, label))[..., :3]
        blended = (1 - alpha) * np.asarray(shown, dtype=np.float32) / 255 + alpha * heat
        return Image.fromarray((blended * 255).clip(0, 255).astype(np.uint8))


def display_size(size: tuple[int, int]) -> tuple[int, int]:
    """`size` shrunk (aspect kept) so its long side is at most DISPLAY_SIDE; never enlarged."""
    w, h = size
    scale = min(1.0, DISPLAY_SIDE / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))



def _uncrop(cam: np.ndarray, photo_size: tuple[int, int], crop: int, resize_side: int) -> np.ndarray:
    """Map a heat-map of the centre crop back onto the whole photo (zero outside the crop)."""
    w, h = photo_size
    scale = resize_side / min(w, h)          # photo → resized photo
    side = crop / scale                      # the crop's side in photo pixels
    left, top = (w - side) / 2, (h - side) / 2
    box = (max(0, round(left)), max(0, round(top)), min(w, round(left + side)), min(h, round(top + side)))
    patch = Image.fromarray((cam * 255).astype(np.uint8)).resize((box[2] - box[0], box[3] - box[1]), Image.BILINEAR)
    full = np.zeros((h, w), dtype=np.float32)
    full[box[1]:box[3], box[0]:box[2]] = np.asarray(patch, dtype=np.float32) / 255
    return full
