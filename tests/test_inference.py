"""The serving layout: the Classifier runs its model channels-last (faster convolutions on the CPU) and
answers as the plain NCHW layout does."""
import numpy as np
import torch

from cnn.inference import Classifier
from imagegen import outlier_image, shape_image


def test_served_channels_last_answers_as_the_plain_layout(model_dir):
    served = Classifier.from_pretrained(model_dir)
    plain = Classifier.from_pretrained(model_dir, channels_last=False)
    conv = next(m for m in served.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert all(p.is_contiguous() for p in plain.model.parameters())
    layouts = []
    conv.register_forward_hook(lambda _m, inputs, _out: layouts.append(
        inputs[0].is_contiguous(memory_format=torch.channels_last) and not inputs[0].is_contiguous()))
    photos = [shape_image("circle", 64, 1), shape_image("square", 80, 2), outlier_image("stripes", 64, 3)]
    probs, unknown = served.analyse_batch(photos)
    assert layouts and all(layouts)               # the photos reach the convolutions as NHWC too
    plain_probs, plain_unknown = plain.analyse_batch(photos)
    assert torch.allclose(probs, plain_probs, atol=1e-5) and torch.equal(unknown, plain_unknown)
    assert served.predict(photos[0], k=1)[0][0] == plain.predict(photos[0], k=1)[0][0] == "circle"
    assert np.allclose(served.gradcam(photos[0]), plain.gradcam(photos[0]), atol=1e-4)
