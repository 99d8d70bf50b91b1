"""The page in a real browser: Debian's chromium, headless, driven by Selenium through chromium-driver.

Where the browser is missing (``.ci/browser`` installs it as root) these tests skip, saying so.
"""

from __future__ import annotations

import shutil

import pytest

from mappa_env.viewer import Collection, action_entry, episode_entry, read_collection, write_episode_file, write_page

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the README's test line installs it)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium and chromedriver here: install Debian's chromium and chromium-driver "
                                       "(.ci/browser does, as root)")

HOSTILE = '<script>window.pwned = 1</script></script><img src=x onerror="window.pwned = 2"><b>bold?</b>'


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(browser, page):
    browser.get(page.as_uri())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "the page's script did not finish"


def rows(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#list .row")


def test_a_filter_hides_the_other_episodes_and_an_episode_opens_with_its_code_and_the_coachs_rationale(
        browser, results_dir, tmp_path):
    collection = read_collection(results_dir)
    page = write_page(collection, tmp_path / "page.html")
    open_page(browser, page)
    assert len(rows(browser)) == 4
    Select(browser.find_element(By.ID, "f-type")).select_by_value("regression")
    regression = [e for e in collection.episodes if e["task_type"] == "regression"]
    assert 0 < len(regression) < 4
    assert [r.find_element(By.CLASS_NAME, "task").text for r in rows(browser)] == [e["task_id"] for e in regression]
    assert browser.find_element(By.ID, "counts").text.startswith(f"{len(regression)} of 4 episodes")

    rows(browser)[0].click()
    expected = regression[0]["actions"]
    cards = browser.find_elements(By.CSS_SELECTOR, "#detail .action")
    assert [c.get_attribute("data-agent") for c in cards] == [a["agent"] for a in expected]
    rationales = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#detail .rationale")]
    assert rationales == [a["verdict"]["rationale"] for a in expected]
    code = browser.find_elements(By.CSS_SELECTOR, "#detail pre.code")
    assert code and "import pandas as pd" in code[0].text
    assert "X_test.pkl" in browser.find_element(By.ID, "detail").text  # the analyst's crash, with its cause

    Select(browser.find_element(By.ID, "f-type")).select_by_value("")
    Select(browser.find_element(By.ID, "f-agent")).select_by_value("verifier")  # only the math team has one
    assert {r.find_element(By.CLASS_NAME, "task").text for r in rows(browser)} == \
        {e["task_id"] for e in collection.episodes if e["source"] == "eval-math.json"}


def test_a_reply_with_script_and_markup_is_shown_as_text_and_never_runs(browser, tmp_path):
    action = action_entry({"agent": "modeler", "action": HOSTILE, "code": "print(1)", "stdout": HOSTILE, "status": "ok",
                           "verdict": {"score": 3.0, "rationale": HOSTILE, "coach": "receipts"}}, 0.3)
    safe = episode_entry(task_id="calm", task_type="regression", seed=1, outcome={"valid": True}, actions=[])
    hostile = episode_entry(task_id=HOSTILE, task_type="regression", seed=2, outcome={"valid": False, "reason": HOSTILE},
                            actions=[action])
    page = write_page(Collection(title=HOSTILE, episodes=[safe, hostile]), tmp_path / "page.html")
    open_page(browser, page)
    browser.find_element(By.ID, "f-search").send_keys("pwned")
    assert len(rows(browser)) == 1
    rows(browser)[0].click()
    detail = browser.find_element(By.ID, "detail")
    assert detail.find_element(By.CSS_SELECTOR, ".reply pre").text == HOSTILE
    assert detail.find_element(By.CSS_SELECTOR, ".rationale").text == HOSTILE
    assert browser.title == HOSTILE
    assert browser.execute_script("return window.pwned") is None  # neither script nor onerror ran
    assert not browser.find_elements(By.CSS_SELECTOR, "img, .reply b, .rationale b, .outcome-reason b, h2 b, #list b")


def test_a_large_run_is_paged_fifty_episodes_at_a_time(browser, tmp_path):
    run = tmp_path / "run"
    episodes = [episode_entry(task_id=f"task-{i:03d}", task_type="arith", seed=i, outcome={"valid": True}, step=1 + i // 40,
                              kind="training", label=f"step {1 + i // 40}",
                              actions=[action_entry({"agent": "verifier", "action": f"answer {i}"}, 1.0)])
                for i in range(120)]
    write_episode_file(run / "episodes" / "step-000001.json", episodes, kind="training", label="steps", step=1,
                       env_id="mathchat-v0")
    page = write_page(read_collection(run), run / "episodes.html")
    open_page(browser, page)
    assert len(rows(browser)) == 50 and browser.find_element(By.CSS_SELECTOR, "#pager span").text == "page 1 of 3"
    browser.find_element(By.ID, "next").click()
    browser.find_element(By.ID, "next").click()
    assert [r.find_element(By.CLASS_NAME, "task").text for r in rows(browser)] == [f"task-{i:03d}" for i in range(100, 120)]
    Select(browser.find_element(By.ID, "f-step")).select_by_value("2")
    assert len(rows(browser)) == 40 and not browser.find_elements(By.ID, "next")  # one page: no pager
