"""The leaderboard page in a real headless browser (Debian's chromium, driven by Playwright): it loads from disk,
aggregates repeated runs, sorts, filters, shows human units and each figure's definition, shows its plots, and
shows a model name that holds markup as text."""

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
    index = tab.eval_on_selector_all("#leaderboard th", "ths => ths.map(th => th.dataset.column)").index(name)
    return tab.eval_on_selector_all(f"#leaderboard tbody tr td:nth-child({index + 1})",
                                    "tds => tds.map(td => td.textContent)")


def test_page_loads_offline_with_every_line(page):
    tab, lines, problems = page
    assert tab.title() == "bench leaderboard"
    # Three runs: `base` and `same` are one configuration (one line of 2 runs); `slowed` has two models.
    assert len(tab.query_selector_all("#leaderboard tbody tr")) == len(lines) == 3
    assert sorted(_column(tab, "run_id")) == sorted(line["run_id"] for line in lines)
    assert sorted(_column(tab, "runs")) == ["1", "1", "2"]
    assert problems == []


def test_filters_keep_the_lines_of_one_value(page):
    tab, lines, _ = page
    dtypes = sorted({line["dtype"] for line in lines})
    assert len(dtypes) == 2  # the slowed run took the other dtype
    tab.select_option("#filters select[name=dtype]", dtypes[0])
    assert set(_column(tab, "dtype")) == {dtypes[0]}
    assert len(_column(tab, "dtype")) == sum(line["dtype"] == dtypes[0] for line in lines)
    tab.select_option("#filters select[name=dtype]", "")
    assert len(_column(tab, "dtype")) == len(lines)


def test_human_units_and_definitions_one_click_away(page):
    from harness.measure.metrics import METRICS

    tab, lines, _ = page
    total = int(float(lines[0]["total_params"]))  # tiny-dense: 4,065,536 parameters
    assert f"{total / 1e6:.3g}M" in _column(tab, "total_params")
    assert all(cell.endswith(" MiB") or cell.endswith(" GiB") for cell in _column(tab, "peak_rss_mib"))
    tab.click("#leaderboard th[data-column=decode_tok_s] a.definition")
    assert tab.evaluate("location.hash") == "#def-decode_tok_s"
    assert tab.text_content("#def-decode_tok_s + dd") == METRICS["decode_tok_s"].definition
    heading = tab.get_attribute("#leaderboard th[data-column=decode_tok_s]", "title")
    assert heading == METRICS["decode_tok_s"].definition


def test_sorting_by_a_column_orders_its_numbers(page):
    tab, lines, _ = page
    heading = tab.locator("#leaderboard th[data-column=decode_tok_s]")
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
