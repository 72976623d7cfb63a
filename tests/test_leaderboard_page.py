"""The leaderboard page in a real headless browser (Debian's chromium, driven by Playwright): it loads from disk,
sorts, shows its plots, and shows a model name that holds markup as text."""

import csv
import shutil

import pytest
from conftest import HOSTILE_MODEL

from harness.cli import main

pytestmark = pytest.mark.slow


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium on PATH: .ci/run installs Debian's (apt-get install chromium); this machine has none")


@pytest.fixture(scope="module")
def page(result_runs, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    out = tmp_path_factory.mktemp("leaderboard")
    assert main(["leaderboard", "build", *(str(result_runs[n]) for n in ("base", "same", "slowed")),
                 "--out", str(out)]) == 0
    lines = [line for path in out.glob("leaderboard-*.csv") for line in csv.DictReader(path.open(newline=""))]
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        tab = browser.new_page()
        problems = []
        tab.on("pageerror", lambda error: problems.append(str(error)))
        tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        tab.on("request", lambda request: problems.append(request.url) if not request.url.startswith(
            ("file:", "data:")) else None)
        tab.goto((out / "index.html").as_uri())
        tab.wait_for_load_state("load")
        yield tab, lines, problems
        browser.close()


def _column(tab, name: str) -> list[str]:
    index = tab.eval_on_selector_all("#leaderboard th", "ths => ths.map(th => th.textContent)").index(name)
    return tab.eval_on_selector_all(f"#leaderboard tbody tr td:nth-child({index + 1})",
                                    "tds => tds.map(td => td.textContent)")


def test_page_loads_offline_with_every_line(page):
    tab, lines, problems = page
    assert tab.title() == "bench leaderboard"
    assert len(tab.query_selector_all("#leaderboard tbody tr")) == len(lines) == 4  # 3 runs, one with 2 models
    assert sorted(_column(tab, "run_id")) == sorted(line["run_id"] for line in lines)
    assert problems == []


def test_sorting_by_a_column_orders_its_numbers(page):
    tab, lines, _ = page
    heading = tab.locator("#leaderboard th", has_text="decode_tok_s").first
    heading.click()
    ascending = [float(v) for v in _column(tab, "decode_tok_s")]
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    assert heading.get_attribute("aria-sort") == "ascending"
    heading.click()
    assert [float(v) for v in _column(tab, "decode_tok_s")] == sorted(ascending, reverse=True)


def test_plots_render(page):
    tab, _, _ = page
    images = tab.eval_on_selector_all("figure img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
    titles = {alt for alt, complete, width in images if complete and width > 0}
    assert {"Quality against decode speed", "MoE against dense: decode speed by parameters",
            "Decode speed against batch size"} <= titles
    # A plot without data says why instead of drawing an empty frame (a CPU profile has no price).
    assert len(tab.query_selector_all("figure")) == len(images) + len(tab.query_selector_all("figure p.none"))


def test_markup_in_a_model_name_is_shown_as_text(page):
    tab, _, _ = page
    assert HOSTILE_MODEL in _column(tab, "model")
    assert tab.query_selector_all("#leaderboard img") == []
    assert tab.title() == "bench leaderboard"  # its onerror never ran
