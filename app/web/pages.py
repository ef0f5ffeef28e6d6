"""The HTML pages: one layout, one content fragment per page, filled in with string.Template."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Page:
    """One page of the app.

    Args:
        slug: its URL path (`/slug`), template `templates/<slug>.html` and script
            `static/<slug>.js`.
        nav: its name in the navigation bar.
        title: the heading and window title.
        lead: one sentence under the heading.
        scripts: more scripts from static/ loaded before the page's own (the model views).
    """

    slug: str
    nav: str
    title: str
    lead: str
    scripts: tuple[str, ...] = ()


# One script per model kind: each adds its view to VIEWS (common.js), keyed by the kind.
VIEW_SCRIPTS = ("classify.js", "tag.js", "seq2seq.js", "caption.js", "language_model.js")


PAGES = (
    Page("try", "Try", "Try the models",
         "Every served model with the view its kind needs: classifiers, taggers, text-to-text "
         "models, captioners and language models, yours included.", VIEW_SCRIPTS),
    Page("models", "Models", "Served models",
         "What the model server has loaded: every model, its versions and their state."),
    Page("results", "Results", "Training results",
         "What rnnkit run is doing now, each task's results beside the published numbers, "
         "and every run's curves, figures and raw JSON, the gradient lab included.",
         ("progress.js",)),
)
PAGE_BY_SLUG = {page.slug: page for page in PAGES}


def _nav(current: str) -> str:
    """The navigation links, the current page marked for styling and screen readers."""
    links = []
    for page in PAGES:
        mark = ' class="active" aria-current="page"' if page.slug == current else ""
        links.append(f'      <a href="/{page.slug}"{mark}>{html.escape(page.nav)}</a>')
    return "\n".join(links)


def render_page(slug: str, server: str) -> bytes:
    """The complete HTML of one page.

    Args:
        slug: a key of PAGE_BY_SLUG.
        server: the model server's address, shown in the header and footer.
    """
    page = PAGE_BY_SLUG[slug]
    layout = Template((TEMPLATES / "layout.html").read_text(encoding="utf-8"))
    content = (TEMPLATES / f"{slug}.html").read_text(encoding="utf-8")
    scripts = "".join(f'  <script src="/static/{html.escape(name)}"></script>\n'
                      for name in page.scripts)
    text = layout.substitute(
        title=html.escape(page.title), lead=html.escape(page.lead), page=page.slug,
        nav=_nav(page.slug), content=content.rstrip("\n"), server=html.escape(server),
        scripts=scripts)
    return text.encode("utf-8")
