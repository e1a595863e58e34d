"""The Gradio app: drop in an animal photo, get the model's top guesses (and, if you ask, where it looked);
or drop many photos (or a zip) and get a table and a CSV. "About this model" says what answers.

    python app.py                               # the bundled model in model/
    python app.py --model user/name@revision    # or a Hub repo id / any model folder (also: MODEL_ID=...)

The `/predict` endpoint takes one image and returns every label's probability; `/predict_batch` takes
a list of images (or zips) and returns the table, one row per photo, in the order given:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860").predict(handle_file("cat.jpg"), api_name="/predict")
    Client("http://127.0.0.1:7860").predict([handle_file("a.jpg"), handle_file("b.jpg")], api_name="/predict_batch")

GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose where it listens (Gradio reads them itself).

FEEDBACK_DIR=path and/or FEEDBACK_REPO=user/name turn on corrections: a visitor can say what a photo really
shows, and the photo and label are kept (and pushed to that Hub dataset) for retraining; see cnn/feedback.py.
`/feedback` takes the photo and a label (one of the model's, or "none") and returns a short confirmation.
"""
from __future__ import annotations

import argparse
import html
import logging
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
from PIL import Image

from cnn import about, batch
from cnn.data import ImageError, ImageTooLargeError, load_image, photo_files
from cnn.feedback import NONE, FeedbackRefused, FeedbackStore, Settings, open_store
from cnn.hub import ModelLoadError
from cnn.inference import UNKNOWN, UNSURE, Classifier
from cnn.wording import none_of, percent

log = logging.getLogger("app")

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "model"
EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR", HERE / "examples"))
MAX_FILE_SIZE = f"{batch.MAX_UPLOAD_MB}mb"   # larger uploads (photo or zip) are refused before they reach the model
SESSIONS_KEPT = 1000        # visitors whose page state the server remembers (bounds memory)
ANALYTICS_KEPT = 1000       # recent requests whose timing Gradio keeps for its monitoring page (bounds memory)
CSS = ".faded { opacity: 0.45; }"   # the guesses for a photo that looks like none of the labels


def load_model(model_id: str, fallback: Path = BUNDLED_MODEL) -> Classifier:
    """The model at `model_id` (folder or 'user/name[@revision]'); the bundled one if that cannot be loaded."""
    try:
        return Classifier.from_pretrained(model_id)
    except ModelLoadError as e:
        if Path(model_id).resolve() == fallback.resolve() or not fallback.is_dir():
            raise
        log.warning("cannot load %s (%s); using the bundled model in %s instead", model_id, e, fallback)
        return Classifier.from_pretrained(fallback)


def refuse(message: str) -> gr.Error:
    """The error for a visitor's mistake: shown on the page, and one info line in the server log. Gradio prints
    a traceback for every gr.Error unless print_exception=False; tracebacks are kept for our own bugs."""
    log.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


def read_photo(photo: dict[str, Any] | str | None) -> Image.Image:
    """Decode an upload ourselves (the events use preprocess=False), so a broken file gets a readable message."""
    if not photo:
        raise refuse("Please add a photo first.")
    path = photo["path"] if isinstance(photo, dict) else photo
    try:
        return load_image(path, draft_side=512)  # big JPEGs decode at reduced scale: much faster
    except ImageError as e:
        name = html.escape(upload_name(photo) or "That file")  # the page renders messages as HTML
        if isinstance(e, ImageTooLargeError):
            raise refuse(f"{name} has too many pixels to open safely. Please send a photo under "
                           f"{2 * Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels.") from None  # Pillow refuses over 2× its limit
        raise refuse(f"{name} is not an image that can be read. Please try a JPEG, PNG or WebP photo.") from None


def upload_name(upload: dict[str, Any] | str) -> str:
    """The name the visitor's file had (Gradio stores it under another path)."""
    if isinstance(upload, dict):
        return upload.get("orig_name") or Path(upload["path"]).name
    return Path(upload).name


def predict(clf: Classifier, photo: dict[str, Any] | str | None) -> dict[str, float]:
    """Every label's probability for one photo (the /predict endpoint)."""
    probs = clf.probabilities(read_photo(photo))
    return dict(zip(clf.labels, probs.tolist()))


def answer_notice(answer: dict[str, float], clf: Classifier) -> str:
    """Words for a weak answer, else nothing: "none of the ten" under the model's unknown threshold,
    "not sure" under its unsure threshold (both measured on real validation photos at training time)."""
    label, p = max(answer.items(), key=lambda item: item[1])
    warning = clf.warning(list(answer.values()))
    if warning == UNKNOWN:
        return (f"🚫 **{none_of(len(answer)).capitalize()} I know.** This photo does not look like any of them "
                f"({', '.join(clf.labels)}). My closest guesses are shown faded, for what they are worth.")
    if warning == UNSURE:
        return (f"⚠️ **Not sure:** the best guess is *{label}* at only {percent(p)}. The photo may be unclear, "
                f"or show {none_of(len(answer))} labels this model knows.")
    return ""


def show_answer(probs: dict[str, float] | None, k: float, clf: Classifier) -> tuple[gr.Label, str]:
    """The visible answer (the top k of `probs`, faded when the photo looks like none of the labels)
    and the notice that goes with it."""
    if not probs:
        return gr.Label(value=None, num_top_classes=int(k), elem_classes=[]), ""
    known = clf.known(list(probs.values()))
    return (gr.Label(value=probs, num_top_classes=int(k), elem_classes=[] if known else ["faded"]),
            answer_notice(probs, clf))


def where_it_looked(clf: Classifier, photo: dict[str, Any] | str | None, show: bool) -> gr.Image:
    """The Grad-CAM overlay, computed only when the checkbox is on."""
    if not (show and photo):
        return gr.Image(value=None, visible=False)
    return gr.Image(value=clf.overlay(read_photo(photo)), visible=True)


def send_feedback(store: FeedbackStore, clf: Classifier, photo: dict[str, Any] | str | None, label: str,
                  visitor: str) -> str:
    """Keep a visitor's correction (the /feedback endpoint): the photo, and what it really shows."""
    image = read_photo(photo)
    try:
        kept = store.add(image, label, dict(zip(clf.labels, clf.probabilities(image).tolist())), visitor)
    except FeedbackRefused as e:
        raise refuse(str(e)) from None
    if not kept.stored:
        return "Thank you! This photo was already kept."
    return f"Thank you! The photo is kept as *{'none of these' if label == NONE else label}*, to improve the model."


def feedback_box(clf: Classifier, store: FeedbackStore, photo: gr.Image, classified: gr.events.Dependency) -> None:
    """Under an answer: pick what the photo really shows (one pick sends it), then a thank-you."""
    where = f" and uploaded to the Hugging Face dataset {store.scheduler.repo_id}" if store.scheduler else ""
    gr.Markdown(f"**Corrections are kept to improve the model.** If you pick the right answer below a "
                f"prediction, the photo (re-encoded, without its metadata) and your answer are stored{where}.")
    with gr.Group(visible=False) as box:
        choice = gr.Dropdown([(label, label) for label in clf.labels] + [("none of these", NONE)], value=None,
                             label="Wrong? Pick what the photo really shows")
        thanks = gr.Markdown()

    def send(photo: dict[str, Any] | None, label: str, request: gr.Request) -> str:
        visitor = request.session_hash or (request.client.host if request.client else "")
        return send_feedback(store, clf, photo, label, visitor)

    classified.success(lambda: (gr.Group(visible=True), None, ""), None, [box, choice, thanks], api_visibility="private")
    classified.failure(lambda: gr.Group(visible=False), None, box, api_visibility="private")
    choice.select(send, [photo, choice], thanks, api_name="feedback", preprocess=False, concurrency_id="model")


def predict_batch(clf: Classifier, files: list[dict[str, Any] | str] | None,
                  progress: gr.Progress = gr.Progress()) -> dict[str, Any]:
    """The /predict_batch endpoint: one table row per photo (a zip's photos in its place), in order."""
    if not files:
        raise refuse("Please add some photos (or a .zip of photos) first.")
    uploads = [batch.Upload(upload_name(f), Path(f["path"] if isinstance(f, dict) else f)) for f in files]
    try:
        rows = batch.classify_uploads(clf, uploads, lambda done, total: progress((done, total), unit="photos"))
    except batch.BatchError as e:
        raise refuse(str(e)) from None
    return batch.table(rows)


def batch_outputs(table: list[list]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The per-label counts and the CSV of a result table. A generator: Gradio copies the CSV into its
    own cache (deleted after an hour) before asking for more, and then our temporary copy goes."""
    rows = [batch.Row(*cells) for cells in table]
    counts = " · ".join(f"{name} {n}" for name, n in batch.summary(rows).most_common())
    with tempfile.TemporaryDirectory(prefix="cnn-csv-") as tmp:
        csv_path = batch.write_csv(rows, Path(tmp) / "predictions.csv")
        yield f"**{len(rows)} photos:** {counts}", gr.update(value=str(csv_path), visible=True)


def limits_text() -> str:
    return (f"Drop up to {batch.MAX_PHOTOS} photos (or pick all the files of a folder), or a .zip of photos. "
            f"Each file may be up to {batch.MAX_UPLOAD_MB} MB; a zip may hold up to {batch.MAX_ZIP_ENTRIES} "
            f"files and unpack to up to {batch.MAX_UNZIPPED_MB} MB. A file that cannot be read gets a row that "
            "says why.")


def about_section(clf: Classifier) -> None:
    """The collapsed "About this model" section: the model card's facts and the training plots."""
    with gr.Accordion("About this model", open=False):
        gr.Markdown(about.about_markdown(clf))
        for path, caption in about.plots(clf.folder):
            gr.Image(str(path), label=caption, interactive=False, buttons=[])


def build_demo(clf: Classifier, examples_dir: Path = EXAMPLES_DIR, bundled: Path = BUNDLED_MODEL,
               feedback: FeedbackStore | None = None) -> gr.Blocks:
    k = min(3, len(clf.labels))
    # Uploads are copied to Gradio's cache folder; drop those older than an hour, every hour, so a public
    # demo does not fill its disk.
    with gr.Blocks(title="Animal classifier", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# Animal classifier\nWhich of these is in the photo: {', '.join(clf.labels)}?\n\n"
                    + about.header(clf, bundled))
        with gr.Tab("One photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo")
                    top_k = gr.Slider(1, len(clf.labels), value=k, step=1, label="How many guesses to show")
                    show_cam = gr.Checkbox(label="Show where the model looked")
                    button = gr.Button("Classify", variant="primary")
                with gr.Column():
                    probs = gr.Label(visible=False)
                    answer = gr.Label(num_top_classes=k, label="Prediction")
                    notice = gr.Markdown()
                    heatmap = gr.Image(label="Where the model looked (red = most)", visible=False, interactive=False)
                    feedback_place = gr.Column() if feedback else None   # filled below, once `classified` exists
            examples = photo_files(examples_dir) + about.model_examples(clf)
            if examples:
                gr.Examples([[str(p)] for p in examples], inputs=photo)
        with gr.Tab("Many photos"):
            gr.Markdown(limits_text())
            files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Photos or a .zip",
                            elem_id="batch-files")
            classify_all = gr.Button("Classify all", variant="primary")
            counts = gr.Markdown()
            table = gr.Dataframe(headers=batch.HEADERS, datatype=["str", "str", "number", "str", "str"], type="array",
                                 interactive=False, label="Results (click a column's header to sort)",
                                 elem_id="batch-table")
            csv_file = gr.File(label="Download as CSV", interactive=False, visible=False, elem_id="batch-csv")
        about_section(clf)

        # /predict fills the hidden `probs` (every label: what API clients get); `answer` shows its top k.
        # All model work shares one concurrency group ("model"), limited by demo.queue() below.
        classified = gr.on([button.click, photo.upload], partial(predict, clf), photo, probs, api_name="predict",
                           preprocess=False, concurrency_id="model", show_progress_on=answer)
        show = partial(show_answer, clf=clf)
        classified.success(show, [probs, top_k], [answer, notice], api_visibility="private")
        top_k.change(show, [probs, top_k], [answer, notice], api_visibility="private")
        classified.failure(lambda: (None, "", gr.Image(value=None, visible=False)), None, [probs, notice, heatmap],
                           api_visibility="private")  # leave nothing stale from the previous photo
        look = partial(where_it_looked, clf)
        classified.success(look, [photo, show_cam], heatmap, preprocess=False, concurrency_id="model",
                           api_visibility="private")
        show_cam.change(look, [photo, show_cam], heatmap, preprocess=False, concurrency_id="model",
                        api_visibility="private")
        if feedback_place is not None:
            with feedback_place:
                feedback_box(clf, feedback, photo, classified)

        # /predict_batch returns the table alone; the counts and the CSV follow from it.
        classified_all = classify_all.click(partial(predict_batch, clf), files, table, api_name="predict_batch",
                                            preprocess=False, concurrency_id="model", show_progress_on=table)
        classified_all.success(batch_outputs, table, [counts, csv_file], api_visibility="private")
        classified_all.failure(lambda: ("", gr.File(value=None, visible=False)), None, [counts, csv_file],
                               api_visibility="private")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("MODEL_ID", str(BUNDLED_MODEL)),
                        help="model folder or Hub repo id 'user/name[@revision]' (default: $MODEL_ID, else model/)")
    parser.add_argument("--fallback", type=Path, default=BUNDLED_MODEL,
                        help="model folder to use when --model cannot be loaded (default: model/)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clf = load_model(args.model, args.fallback)
    log.info("serving %s (%s)", clf.config.get("architecture"), clf.source)
    demo = build_demo(clf, feedback=open_store(Settings.from_env(default_folder=HERE / "feedback"), clf.labels,
                                               clf.folder))
    # Gradio keeps the timing of the last 10,000 requests for its monitoring page; a public Space needs fewer.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(ANALYTICS_KEPT))
    # 2 CPU cores and torch already spreads one forward pass over both: 2 requests at a time lets one
    # decode/upload while another computes; more only thrash. A bounded queue refuses floods politely.
    demo.queue(default_concurrency_limit=2, max_size=64)
    # Gradio keeps each visitor's component values (~25 KB) for the most recent sessions; the default
    # 10,000 lets memory grow by ~250 MB under a stream of one-off API calls. 1,000 recent visitors is plenty.
    demo.launch(max_file_size=MAX_FILE_SIZE, state_session_capacity=SESSIONS_KEPT, css=CSS)


if __name__ == "__main__":
    main()
