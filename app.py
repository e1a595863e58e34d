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
shows, and the photo and label are kept (and pushed to that Hub dataset) for retraining; see page/feedback.py.
`/feedback` takes the photo and a label (one of the model's, or "none") and returns a short confirmation.
"""
from __future__ import annotations

import argparse
import html
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image

from page import about, batch, ratelimit, resources, shutdown, uploads
from cnn.data import ImageError, ImageRefused, load_image, photo_files
from page.feedback import NONE, Correction, FeedbackRefused, FeedbackStore, Settings, open_store
from cnn.hub import ModelLoadError, ModelNotFoundError
from cnn.inference import UNKNOWN, UNSURE, Classifier
from cnn.wording import none_of, percent

log = logging.getLogger("app")

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "model"
EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR", HERE / "examples"))
MAX_FILE_SIZE = f"{batch.MAX_UPLOAD_MB}mb"   # larger uploads (photo or zip) are refused before they reach the model
UPLOAD_CACHE_MB = 2000      # Gradio's upload cache beyond this loses its oldest files (Gradio caps only their age)
SESSIONS_KEPT = 1000        # visitors whose page state the server remembers (bounds memory)
ANALYTICS_KEPT = 1000       # recent requests whose timing Gradio keeps for its monitoring page (bounds memory)
PHOTOS_AT_ONCE = 8          # requests of one kind in progress at once (each lane; batches have one lane of 1)
# One system font stack for every weight: the default theme's bundled semi-bold file holds only a few glyphs,
# so bold text and titles fell back to another font letter by letter.
FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Noto Sans", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
THEME = gr.themes.Default(font=FONTS, font_mono=MONO_FONTS)
CONFIRM_LABEL = "✓ The answer was right"                  # keeps the photo under the model's top label
CONFIRM_NONE = "✓ Right: it shows none of these labels"     # keeps it under "none" (page.feedback.NONE)
REFUSAL_TITLE = "Sorry"     # over a message for a visitor's mistake: Gradio titles each by its kind, "Error"
REFUSAL_SECONDS = 8         # how long it stays (Gradio's default: 10)
BATCH_COLUMNS = ["60px", "96px", "72px", "80px", "auto"]  # batch.PAGE_HEADERS': on a phone the flag whole, the file begun
FILE_LIST_HEIGHT = 240      # px: the Many photos tab's list of uploads scrolls past this (500 files: not 15,000 px)
CSS = f"""
.toast-title.error {{ font-size: 0; }}  /* a visitor's mistake is titled REFUSAL_TITLE, not "Error" */
.toast-title.error::before {{ content: "{REFUSAL_TITLE}"; font-size: var(--text-lg); margin-right: var(--size-1); }}
.toast-title.error > * {{ font-size: var(--text-lg); }}
.faded {{ opacity: 0.45; }}  /* the guesses for a photo that looks like none of the labels */
#about table {{ display: block; overflow-x: auto; border: 0; }}  /* a wide table scrolls sideways, words stay whole */
#about th, #about td, #about td * {{ white-space: nowrap; word-break: normal; overflow-wrap: normal; }}
#about .plot img {{ max-width: 100%; height: auto; }}  /* a plot fits the screen: on a phone, pinch to zoom */
#heatmap [data-testid=block-label] {{ position: static; }}  /* its caption on a line of its own, clear of its icons */
#batch-files .file-preview-holder {{ max-height: {FILE_LIST_HEIGHT}px; overflow-y: auto; }}
/* the rows (and their stripes) span the table: the file name's column takes the rest */
#batch-table .virtual-body {{ min-width: 100%; }}
#batch-table .virtual-row > .body-cell:last-child {{ flex-grow: 1; }}
#batch-table .cell-wrap {{ word-break: normal; overflow-wrap: normal; }}
#batch-table td:last-child .cell-wrap {{ overflow-wrap: anywhere; }}  /* long file names, at any character */
#batch-table img {{ max-height: 48px; width: auto; }}
"""
# Run in the page as a photo or batch is sent: the messages about earlier ones go, so they never pile up (the
# inputs pass through unchanged).
DISMISS_MESSAGES = """(...inputs) => {
  document.querySelectorAll("[data-testid=toast-close]").forEach(button => button.click());
  return inputs;
}"""
# After an answer: on a phone the answer sits under the photo, below the fold; bring it into view (only
# when it is not already in view, so the desktop page does not move).
SCROLL_TO_ANSWER = """() => { setTimeout(() => {
  const el = document.getElementById("answer");
  if (!el) return;
  const box = el.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) el.scrollIntoView({behavior: "smooth", block: "start"});
}, 50); }"""


def load_model(model_id: str, fallback: Path = BUNDLED_MODEL) -> Classifier:
    """The model at `model_id` (folder or 'user/name[@revision]'); the bundled one if that cannot be loaded (a Hub
    repo out of reach, a damaged folder). A folder that does not exist is ModelNotFoundError, naming the closest."""
    try:
        return Classifier.from_pretrained(model_id)
    except ModelNotFoundError:   # a mistyped folder: serving another model instead would hide the typo
        raise
    except ModelLoadError as e:
        if Path(model_id).resolve() == fallback.resolve() or not fallback.is_dir():
            raise
        log.warning("cannot load %s (%s); using the bundled model in %s instead", model_id, e, fallback)
        return Classifier.from_pretrained(fallback)


def refuse(message: str) -> gr.Error:
    """The error for a visitor's mistake: shown on the page (under a gentle title, REFUSAL_TITLE, for a while:
    each new attempt dismisses the last, DISMISS_MESSAGES), and one info line in the server log. Gradio prints a
    traceback for every gr.Error unless print_exception=False; tracebacks are kept for our own bugs."""
    log.info("refused: %s", uploads.printable(message, 300))   # one line: a visitor's text can forge none
    return gr.Error(message, duration=REFUSAL_SECONDS, print_exception=False)


def uploaded(upload: dict[str, Any] | str) -> Path:
    """The real path of a file the visitor uploaded; any other reference is refused (page/uploads.py says why)."""
    try:
        return uploads.uploaded_path(upload, get_upload_folder())
    except uploads.NotUploaded as e:
        raise gr.Error(str(e), print_exception=False) from None   # page.uploads logs one safe line instead


def read_photo(photo: dict[str, Any] | str | None, draft_side: int = 512) -> Image.Image:
    """Decode an upload ourselves (the events use preprocess=False), so a broken file gets a readable message.
    Big JPEGs decode at reduced scale, down to `draft_side` (the classifying paths pass the model's)."""
    if not photo:
        raise refuse("Please add a photo first.")
    path = uploaded(photo)
    try:
        return load_image(path, draft_side=draft_side)
    except ImageError as e:
        name = html.escape(upload_name(photo) or "That file")  # the page renders messages as HTML
        if isinstance(e, ImageRefused):    # the pixel budget's reason: "has too many pixels to open safely: ..."
            raise refuse(f"{name} {e}.") from None
        raise refuse(f"{name} is not an image that can be read. Please try a JPEG, PNG or WebP photo.") from None


def upload_name(upload: dict[str, Any] | str) -> str:
    """The name the visitor's file had (Gradio stores it under another path)."""
    if isinstance(upload, dict):
        return upload.get("orig_name") or Path(upload["path"]).name
    return Path(upload).name


def predict(clf: Classifier, photo: dict[str, Any] | str | None) -> dict[str, float]:
    """Every label's probability for one photo (what the /predict endpoint returns)."""
    return assess(clf, photo)[0]


def assess(clf: Classifier, photo: dict[str, Any] | str | None) -> tuple[dict[str, float], bool]:
    """Every label's probability for one photo, and whether it looks like none of the labels (the model's whole
    rule, cnn.ood: the top probability, and the feature distance when the model has a detector)."""
    probs, unknown = clf.analyse_batch([read_photo(photo, clf.resize_side)])   # the batch's decode rule
    return dict(zip(clf.labels, probs[0].tolist())), bool(unknown[0])


def answer_notice(answer: dict[str, float], clf: Classifier, unknown: bool | None = None) -> str:
    """Words for a weak answer, else nothing: "none of the ten" when the photo looks like none of the labels
    (`unknown`, from `assess`), "not sure" under the model's unsure threshold (both measured on real
    validation photos at training time)."""
    label, p = max(answer.items(), key=lambda item: item[1])
    warning = clf.warning(list(answer.values()), unknown)
    if warning == UNKNOWN:
        return (f"🚫 **{none_of(len(answer)).capitalize()} I know.** This photo does not look like any of them "
                f"({', '.join(clf.labels)}). My closest guesses are shown faded, for what they are worth.")
    if warning == UNSURE:
        return (f"⚠️ **Not sure:** the best guess is *{label}* at only {percent(p)}. The photo may be unclear, "
                f"or show {none_of(len(answer))} labels this model knows.")
    return ""


def show_answer(probs: dict[str, float] | None, k: float, clf: Classifier,
                unknown: bool | None = None) -> tuple[gr.Label, str]:
    """The visible answer (the top k of `probs`; faded, under no headline, when the photo looks like none of
    the labels) and the notice that goes with it."""
    if not probs:
        return gr.Label(value=None, num_top_classes=int(k), elem_classes=[]), ""
    known = clf.known(list(probs.values()), unknown)   # else no big top guess as a headline: the notice says why
    return (gr.Label(value=probs, num_top_classes=int(k), elem_classes=[] if known else ["faded"], show_heading=known),
            answer_notice(probs, clf, unknown))


def where_it_looked(clf: Classifier, photo: dict[str, Any] | str | None, show: bool) -> gr.Image:
    """The Grad-CAM overlay, computed only when the checkbox is on."""
    if not (show and photo):
        return gr.Image(value=None, visible=False)
    return gr.Image(value=clf.overlay(read_photo(photo, clf.resize_side)), visible=True)


def send_feedback(store: FeedbackStore, clf: Classifier, photo: dict[str, Any] | str | None, label: str | None,
                  visitor: str) -> tuple[str, Correction]:
    """Keep a visitor's correction (the /feedback endpoint): the photo, and what it really shows. Returns the
    thank-you and the correction (the page keeps it, so the visitor can undo it)."""
    if not label:
        raise refuse("Please pick what the photo really shows first.")
    image = read_photo(photo)   # kept at up to 512 px; the answer logged beside it is /predict's
    try:
        kept = store.add(image, label, predict(clf, photo), visitor)
    except FeedbackRefused as e:
        # it may quote the label: shown as text; a visitor's refusal is no traceback in the operator's log
        raise refuse(html.escape(str(e), quote=False)) from None
    if not kept.stored and not kept.moved_from:
        return "Thank you! This photo was already kept.", kept
    return (f"Thank you! The photo is kept as *{'none of these' if label == NONE else label}*, to improve the "
            "model.", kept)


def confirmed_label(answer: dict[str, Any] | None, unknown: bool | None) -> str | None:
    """What "the answer was right" keeps the photo as: the model's top label, or "none" when the answer was
    "none of the N" (its faded top guess was no answer, so confirming it must not teach retraining that label).
    `answer` is the hidden Label's value as the page sends it; `unknown` the model's whole verdict (`assess`),
    which the page has before it offers the button."""
    if not answer or not answer.get("label"):
        return None
    return NONE if unknown else answer["label"]


def confirm_wording(label: str | None) -> str:
    """The confirm button's words for the answer shown: it says which label it keeps."""
    return CONFIRM_NONE if label == NONE else CONFIRM_LABEL


def feedback_box(clf: Classifier, store: FeedbackStore, photo: gr.Image, probs: gr.Label, unknown: gr.State,
                 answered: list[gr.events.Dependency], judged: list[gr.events.Dependency]) -> None:
    """Under an answer: "the answer was right" (for a "none of the N" answer: "it shows none of these"), or pick
    what the photo really shows and send it; then a thank-you and an Undo for a mis-click. The box opens once
    the answer is `judged` (the verdict decides what confirming keeps) and closes when it could not be
    `answered`."""
    where = f" and uploaded to the Hugging Face dataset {store.scheduler.repo_id}" if store.scheduler else ""
    gr.Markdown(f"**Corrections are kept to improve the model.** If you confirm or correct an answer below a "
                f"prediction, the photo (re-encoded, without its metadata) and your answer are stored{where}.")
    kept = gr.State(None)       # the visitor's last Correction, for Undo
    with gr.Column(visible=False, elem_id="feedback") as box:
        right = gr.Button(CONFIRM_LABEL, size="sm")
        choice = gr.Dropdown([(label, label) for label in clf.labels] + [("none of these", NONE)], value=None,
                             label="Wrong? Pick what the photo really shows")
        send = gr.Button("Send correction", size="sm")
        thanks = gr.Markdown()
        undo = gr.Button("Undo", size="sm", visible=False)

    def send_correction(photo: dict[str, Any] | None, label: str | None, request: gr.Request
                        ) -> tuple[str, Correction]:
        """Keep the photo under the label the visitor picked (one of the model's labels, or "none")."""
        return send_feedback(store, clf, photo, label, ratelimit.visitor(request))

    def confirm_answer(photo: dict[str, Any] | None, answer: dict[str, Any] | None, looks_unknown: bool | None,
                       request: gr.Request) -> tuple[str, Correction]:
        """Keep the photo as the model answered it (its top label, or "none"): the visitor says it was right."""
        return send_feedback(store, clf, photo, confirmed_label(answer, looks_unknown), ratelimit.visitor(request))

    def offer_undo() -> gr.Button:
        """Show Undo once a correction is kept."""
        return gr.Button(visible=True)

    def undo_correction(correction: Correction | None) -> tuple[str, None, gr.Button]:
        """Take back the visitor's last correction (a mis-click)."""
        if correction is not None:
            store.undo(correction)
        return "Undone: nothing is kept from this photo.", None, gr.Button(visible=False)

    def open_box(answer: dict[str, Any] | None, looks_unknown: bool | None
                 ) -> tuple[gr.Column, gr.Button, None, str, None, gr.Button]:
        """A fresh box for a new answer: a confirm button that names what it keeps, nothing picked, no
        thank-you, nothing to undo."""
        return (gr.Column(visible=True), gr.Button(confirm_wording(confirmed_label(answer, looks_unknown))),
                None, "", None, gr.Button(visible=False))

    def close_box() -> gr.Column:
        """No answer, nothing to correct."""
        return gr.Column(visible=False)

    for done in judged:
        done.success(open_box, [probs, unknown], [box, right, choice, thanks, kept, undo], api_visibility="private",
                     preprocess=False)
    for done in answered:
        done.failure(close_box, None, box, api_visibility="private")
    photo.clear(close_box, None, box, api_visibility="private")
    send.click(send_correction, [photo, choice], [thanks, kept], api_name="feedback", preprocess=False,
               concurrency_id="model").success(offer_undo, None, undo, api_visibility="private")
    right.click(confirm_answer, [photo, probs, unknown], [thanks, kept], api_visibility="private", preprocess=False,
                concurrency_id="model").success(offer_undo, None, undo, api_visibility="private")
    undo.click(undo_correction, kept, [thanks, kept, undo], api_visibility="private")


def predict_batch(clf: Classifier, files: list[dict[str, Any] | str] | None,
                  progress: gr.Progress = gr.Progress(), limiter: ratelimit.RateLimiter | None = None,
                  visitor: str = ratelimit.UNKNOWN_VISITOR) -> tuple[list[list], list[str]]:
    """The /predict_batch endpoint: one table row per photo (a zip's photos in its place), in order, and
    each row's thumbnail for the page (kept in a gr.State, so API clients get the table alone); one batch
    counted against the visitor's (and everyone's) batches per minute when there is a `limiter`."""
    if not files:
        raise refuse("Please add some photos (or a .zip of photos) first.")
    sent = [batch.Upload(upload_name(f), uploaded(f)) for f in files]
    if limiter:
        try:
            limiter.take(visitor)
        except ratelimit.RateLimited as e:
            raise refuse("Many batches are being classified just now: please try again in a minute." if e.everyone
                         else "That is many batches in a short time: please wait a minute before sending more.") from None
    try:
        rows = batch.classify_uploads(clf, sent, lambda done, total: progress((done, total), unit="photos"),
                                      thumbnails=True)
    except batch.BatchError as e:
        raise refuse(str(e)) from None
    return [row.cells() for row in rows], [row.thumbnail for row in rows]


def batch_outputs(table: list[list], thumbnails: list[str] | None = None
                  ) -> Iterator[tuple[str, dict[str, Any], list[list]]]:
    """The counts (each photo once), the CSV and the page's table (thumbnails, flag first) of a result table.
    A generator: Gradio copies the CSV into its own cache (deleted after an hour) before asking for more,
    and then our temporary copy goes."""
    thumbnails = thumbnails or [""] * len(table)
    rows = [batch.Row(*cells, thumbnail=thumb) for cells, thumb in zip(table, thumbnails)]
    with tempfile.TemporaryDirectory(prefix="cnn-csv-") as tmp:
        csv_path = batch.write_csv(rows, Path(tmp) / "predictions.csv")
        yield (batch.counts_text(rows), gr.update(value=str(csv_path), visible=True),
               [batch.page_cells(row) for row in rows])


def limits_text() -> str:
    """The Many photos tab's limits, in words, from page/batch.py's numbers."""
    return (f"Drop up to {batch.MAX_PHOTOS} photos (or pick all the files of a folder), or a .zip of photos. "
            f"Each file may be up to {batch.MAX_UPLOAD_MB} MB; a zip may hold up to {batch.MAX_ZIP_ENTRIES} "
            f"files and unpack to up to {batch.MAX_UNZIPPED_MB} MB. A file that cannot be read gets a row that "
            "says why.")


def no_examples_text() -> str:
    """Where the example photos would be, when neither the model nor EXAMPLES_DIR has any: how the page's owner
    adds a few. No photos are made up instead: drawn shapes would be no animals, and the page must not ship
    others' photos (a Hub model's own examples/ come with it, cnn.hub)."""
    return ("*No example photos here yet.* Whoever runs this page can add a few photos they may publish: in an "
            "`examples/` folder beside `app.py` (or the folder `EXAMPLES_DIR` names), or with the model, "
            "`python -m train.push RUN USER/NAME --examples DIR`.")


def about_section(clf: Classifier) -> None:
    """The collapsed "About this model" section: the model card's facts and the training plots."""
    with gr.Accordion("About this model", open=False, elem_id="about"):
        gr.Markdown(about.about_markdown(clf))
        for path, caption in about.plots(clf.folder):
            # The caption above the plot, not Gradio's label badge, which covers the plot's top rows.
            gr.Markdown(f"**{caption}**")
            gr.Image(str(path), label=caption, show_label=False, interactive=False, buttons=[],
                     elem_classes=["plot"])


def build_demo(clf: Classifier, examples_dir: Path = EXAMPLES_DIR, bundled: Path = BUNDLED_MODEL,
               feedback: FeedbackStore | None = None) -> gr.Blocks:
    """The page: One photo, Many photos, About this model. Every handler is a named function (Gradio's MCP
    server names and describes its tools after them)."""
    k = min(3, len(clf.labels))

    def classify_photo(photo: dict[str, Any] | str | None) -> dict[str, float]:
        """Which of the model's labels a photo shows: every label's probability (they add up to 1).

        Args:
            photo: the photo to classify (JPEG, PNG or WebP).
        """
        return predict(clf, photo)

    def judge_photo(photo: dict[str, Any] | str | None) -> bool:
        """Whether the page's photo looks like none of the labels (the notice and the faded guesses). Its own
        event, so /predict (and the MCP tool) keep one output; it costs one more small forward pass."""
        return assess(clf, photo)[1]

    batches = ratelimit.RateLimiter(batch.BATCHES_PER_MINUTE, batch.BATCHES_PER_MINUTE_ALL, "batches")

    def classify_photos(files: list[dict[str, Any] | str] | None, request: gr.Request,
                        progress: gr.Progress = gr.Progress()) -> tuple[list[list], list[str]]:
        """The model's top label for each of many photos (a .zip's photos one by one), one table row each:
        file, top label, probability, flag ("not sure", "none of the N") and error.

        Args:
            files: the photos and/or .zip files of photos.
        """
        return predict_batch(clf, files, progress, batches, ratelimit.visitor(request))

    def show_guesses(probs: dict[str, float] | None, unknown: bool | None, k: float) -> tuple[gr.Label, str]:
        """The top k guesses and the notice for a weak answer."""
        return show_answer(probs, k, clf, unknown)

    def show_where_it_looked(photo: dict[str, Any] | None, show: bool) -> gr.Image:
        """The heat-map, when the visitor asks for it."""
        return where_it_looked(clf, photo, show)

    def forget_answer() -> tuple[None, None, gr.Label, str, gr.Image]:
        """No photo (removed, or one that could not be read: no broken image left in its place): nothing left
        from the previous one."""
        return None, None, gr.Label(value=None, elem_classes=[]), "", gr.Image(value=None, visible=False)

    def forget_results() -> tuple[str, gr.File, None]:
        """No batch (failed, or its files removed): no counts, CSV or table left from the previous one."""
        return "", gr.File(value=None, visible=False), None

    # Uploads are copied to Gradio's cache folder; drop those older than an hour, every hour, so a public
    # demo does not fill its disk.
    name = about.title(clf, bundled)
    with gr.Blocks(title=name, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {name}\nWhich of these is in the photo: {', '.join(clf.labels)}?\n\n"
                    + about.header(clf, bundled))
        gr.Markdown(about.plain_words(clf), elem_id="plain-words")
        with gr.Tab("One photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo",
                                     elem_id="photo")
                    top_k = gr.Slider(1, len(clf.labels), value=k, step=1, label="How many guesses to show")
                    show_cam = gr.Checkbox(label="Show where the model looked")
                    button = gr.Button("Classify", variant="secondary")
                with gr.Column():
                    probs = gr.Label(visible=False)
                    looks_unknown = gr.State(None)   # the model's "none of the ten" verdict on `probs`
                    answer = gr.Label(num_top_classes=k, label="Prediction", elem_id="answer")
                    notice = gr.Markdown()
                    heatmap = gr.Image(label="Where the model looked (red = most)", visible=False, interactive=False,
                                       elem_id="heatmap")
                    feedback_place = gr.Column() if feedback else None   # filled below, once the events exist
            examples = photo_files(examples_dir) + about.model_examples(clf)
            example_set = gr.Examples([[str(p)] for p in examples], inputs=photo) if examples else None
            if not examples:
                gr.Markdown(no_examples_text(), elem_id="no-examples")
        with gr.Tab("Many photos"):
            gr.Markdown(limits_text())
            files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Photos or a .zip",
                            elem_id="batch-files")
            classify_all = gr.Button("Classify all", variant="secondary")
            counts = gr.Markdown(elem_id="batch-counts")
            table = gr.Dataframe(headers=batch.HEADERS, datatype=["str", "str", "number", "str", "str"], type="array",
                                 interactive=False, visible=False)   # what /predict_batch returns
            thumbnails = gr.State([])
            shown = gr.Dataframe(headers=batch.PAGE_HEADERS, datatype=batch.PAGE_TYPES, type="array",
                                 interactive=False, wrap=True, column_widths=BATCH_COLUMNS,
                                 label="Results (to sort: click a column's header, then its ⋮ menu)", elem_id="batch-table")
            csv_file = gr.File(label="Download as CSV", interactive=False, visible=False, elem_id="batch-csv")
        about_section(clf)

        # Both tabs classify as soon as photos arrive (dropped, picked, pasted, or an example clicked), so they
        # behave alike; the buttons run the same photos again (and take a webcam shot, which is no upload).
        # /predict fills the hidden `probs` (every label: what API clients get); `answer` shows its top k.
        # Single-photo model work shares one concurrency group ("model"), limited by demo.queue() below.
        answered = [gr.on([photo.upload, button.click], classify_photo, photo, probs, api_name="predict",
                          preprocess=False, concurrency_id="model", show_progress_on=answer, js=DISMISS_MESSAGES)]
        if example_set is not None:
            answered.append(example_set.load_input_event.success(
                classify_photo, photo, probs, api_visibility="private", preprocess=False, concurrency_id="model",
                show_progress_on=answer))
        judged = [done.success(judge_photo, photo, looks_unknown, preprocess=False, concurrency_id="model",
                               api_visibility="private") for done in answered]
        for done, verdict in zip(answered, judged):
            verdict.then(show_guesses, [probs, looks_unknown, top_k], [answer, notice], api_visibility="private").then(
                None, js=SCROLL_TO_ANSWER)
            done.failure(forget_answer, None, [photo, probs, answer, notice, heatmap], api_visibility="private")
            done.success(show_where_it_looked, [photo, show_cam], heatmap, preprocess=False, concurrency_id="model",
                         api_visibility="private")
        photo.clear(forget_answer, None, [photo, probs, answer, notice, heatmap], api_visibility="private")
        top_k.change(show_guesses, [probs, looks_unknown, top_k], [answer, notice], api_visibility="private")
        show_cam.change(show_where_it_looked, [photo, show_cam], heatmap, preprocess=False, concurrency_id="model",
                        api_visibility="private")
        if feedback_place is not None:
            with feedback_place:
                feedback_box(clf, feedback, photo, probs, looks_unknown, answered, judged)

        # /predict_batch returns the table alone (the thumbnails go to a State, which API clients never see);
        # the counts, the CSV and the page's table follow from it. Batches have a lane of their own, one at a
        # time: a long one never holds up single photos.
        classified_all = gr.on([files.upload, classify_all.click], classify_photos, files, [table, thumbnails],
                               api_name="predict_batch", preprocess=False, concurrency_id="batch",
                               concurrency_limit=1, show_progress_on=shown, js=DISMISS_MESSAGES)
        classified_all.success(batch_outputs, [table, thumbnails], [counts, csv_file, shown], api_visibility="private")
        classified_all.failure(forget_results, None, [counts, csv_file, shown], api_visibility="private")
        files.clear(forget_results, None, [counts, csv_file, shown], api_visibility="private")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("MODEL_ID", str(BUNDLED_MODEL)),
                        help="model folder or Hub repo id 'user/name[@revision]' (default: $MODEL_ID, else model/)")
    parser.add_argument("--fallback", type=Path, default=BUNDLED_MODEL,
                        help="model folder to use when --model cannot be loaded (default: model/)")
    args = parser.parse_args()
    shutdown.exit_on_sigterm()   # a Space stops the app with SIGTERM: as an ordinary exit, the `finally` below runs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        clf = load_model(args.model, args.fallback)
    except ModelNotFoundError as e:
        parser.error(str(e))
    log.info("serving %s (%s)", clf.config.get("architecture"), clf.source)
    feedback = open_store(Settings.from_env(default_folder=HERE / "feedback"), clf.labels, clf.folder)
    demo = build_demo(clf, feedback=feedback)
    # Gradio keeps the timing of the last 10,000 requests for its monitoring page; a public Space needs fewer.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(ANALYTICS_KEPT))
    # Whose X-Forwarded-For uvicorn may believe: the Space's proxy, a proxy the operator names, else nobody.
    os.environ[ratelimit.PROXY_ENV] = ratelimit.trusted_proxies(os.environ)
    # Requests run up to PHOTOS_AT_ONCE at a time: big images take turns inside cnn.data (one decode at a
    # time), so a few of them wait there while ordinary photos pass. A bounded queue refuses floods politely.
    demo.queue(default_concurrency_limit=PHOTOS_AT_ONCE, max_size=64)
    resources.Sweeper(gr.utils.get_upload_folder(), UPLOAD_CACHE_MB).start()   # memory back after bursts, cache capped
    # Gradio keeps each visitor's component values (~25 KB) for the most recent sessions; the default
    # 10,000 lets memory grow by ~250 MB under a stream of one-off API calls. 1,000 recent visitors is plenty.
    try:
        demo.launch(max_file_size=MAX_FILE_SIZE, state_session_capacity=SESSIONS_KEPT, css=CSS, theme=THEME)
    finally:   # SIGTERM, Ctrl-C or demo.close(): no more corrections come in; push those the Hub lacks
        demo.close()
        if feedback:
            feedback.close()


if __name__ == "__main__":
    main()
