"""How fast the episode viewer's page opens in a real browser, for runs of growing size.

For each size, a run of synthetic episodes (5 actions each; a 1.2 kB reply with a code block, 400
characters of stdout, a 200-character rationale: about what a dsbench action holds after the
episode file's cut) is written as a page, then opened in headless chromium (Debian's, through
Selenium and chromium-driver) three times. Measured in the browser: ``ready``, the time from
navigation to the end of the page's script (HTML parsed, data parsed, filters built, first 50 rows
drawn); ``open``, the click on the episode to its drawn timeline; ``search``, typing a word that is
in every episode's stdout (the whole run searched, the list redrawn). Target (issue 18): 5,000
actions open in under 2 s.

    python benchmarks/viewer.py                      # the table
    python benchmarks/viewer.py --screenshot docs/viewer.png   # and a screenshot of real episodes

The screenshot is of a real evaluation: dsbench-v0's team whose data engineer never saves
X_test.pkl (``buggy-missing-x-test``), the analyst's crash and the coach's verdicts on view.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mappa_env.viewer import Collection, action_entry, episode_entry, read_collection, write_page

REPLY = ("I will load the data and fit a model.\n```python\n" + "import pandas as pd\n"
         + "train = pd.read_csv('train.csv')  # the training rows\n" * 20 + "```\nDone.")
AGENTS = ("data_engineer", "modeler", "analyst", "analyst", "analyst")


def synthetic(actions: int) -> Collection:
    episodes = []
    for i in range(actions // len(AGENTS)):
        steps = [action_entry({"agent": agent, "action_index": k, "action": REPLY, "code": REPLY[40:1100],
                               "stdout": f"fitted in {k}.2 s, score 0.{i % 97:02d}\n" * 12, "status": "ok",
                               "duration_s": 1.5, "files_changed": ["X_train.pkl"],
                               "verdict": {"score": float(i % 11), "coach": "receipts",
                                           "rationale": "saved X_train.pkl and y_train.pkl as the pipeline needs; " * 4}},
                              0.1 * (i % 11)) for k, agent in enumerate(AGENTS)]
        episodes.append(episode_entry(task_id=f"builtin/task-{i % 40:02d}", task_type=("regression", "classification")[i % 2],
                                      seed=i, outcome={"valid": i % 3 > 0, "metrics": {"rmse": 0.5}}, actions=steps,
                                      label=f"step {1 + i // 32}", step=1 + i // 32, kind="training"))
    return Collection(title=f"{actions} actions", episodes=episodes)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def measure(driver, page: Path) -> tuple[float, float, float]:
    from selenium.webdriver.common.by import By

    driver.get(page.as_uri())
    ready = float(driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    opened = driver.execute_script("""
        const t = performance.now(); document.querySelector('#list .row').click(); return performance.now() - t;""")
    searched = driver.execute_script("""
        const box = document.getElementById('f-search'), t = performance.now();
        box.value = 'fitted'; box.dispatchEvent(new Event('input')); return performance.now() - t;""")
    return ready, opened, searched


def screenshot(driver, out: Path) -> None:
    from selenium.webdriver.common.by import By

    from mappa_env.evaluation import evaluate, write_results

    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / "eval-buggy-missing-x-test-heldout.json"
        write_results(evaluate("buggy-missing-x-test", episodes=3, progress=False, record_requests=True), results)
        page = write_page(read_collection(results), Path(scratch) / "page.html")
        driver.get(page.as_uri())
        driver.find_elements(By.CSS_SELECTOR, "#list .row")[0].click()
        driver.set_window_size(1400, 1100)
        # the analyst's crash on the missing X_test.pkl, and below it the coach's verdict naming the culprit
        verdict = driver.find_elements(By.CSS_SELECTOR, '#detail .action[data-agent="analyst"] .verdict')[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", verdict)
        driver.save_screenshot(str(out))
    print(f"screenshot: {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000, 20000], help="actions per page")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, default=None, help="also save a screenshot of real episodes here")
    args = parser.parse_args(argv)
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("needs Debian's chromium and chromium-driver (.ci/browser installs them)", file=sys.stderr)
        return 2
    driver = browser()
    try:
        print("| actions | page MB | write s | ready ms (median of runs) | open episode ms | search ms |")
        print("|---:|---:|---:|---:|---:|---:|")
        with tempfile.TemporaryDirectory() as scratch:
            for size in args.sizes:
                began = time.perf_counter()
                page = write_page(synthetic(size), Path(scratch) / f"page-{size}.html")
                written = time.perf_counter() - began
                runs = [measure(driver, page) for _ in range(args.repeats)]
                ready, opened, searched = (statistics.median(r[i] for r in runs) for i in range(3))
                spread = f"{min(r[0] for r in runs):.0f}-{max(r[0] for r in runs):.0f}"
                print(f"| {size} | {page.stat().st_size / 1e6:.1f} | {written:.2f} | {ready:.0f} ({spread}) | "
                      f"{opened:.0f} | {searched:.0f} |")
        if args.screenshot:
            screenshot(driver, args.screenshot)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
