from mappa_env.text import extract_python_blocks, format_size, strip_thinking, truncate_middle


def test_extracts_python_blocks_in_order():
    text = "Plan.\n```python\na = 1\n```\nthen\n```py\nb = a + 1\n```\n```bash\nls\n```"
    assert extract_python_blocks(text) == ["a = 1", "b = a + 1"]


def test_ignores_code_inside_thinking():
    text = "<think>maybe\n```python\nimport os; os.remove('x')\n```\n</think>\n```python\nprint(1)\n```"
    assert extract_python_blocks(text) == ["print(1)"]


def test_unclosed_think_hides_everything_after_it():
    assert extract_python_blocks("<think>```python\nprint(1)\n```") == []
    assert strip_thinking("a<think>b") == "a"


def test_unterminated_final_block_still_counts():
    assert extract_python_blocks("```python\nx = 2\nprint(x)") == ["x = 2\nprint(x)"]


def test_no_code_and_empty_blocks():
    assert extract_python_blocks("Done, nothing to run.") == []
    assert extract_python_blocks("```python\n\n```") == []


def test_truncate_middle_keeps_head_and_tail_with_marker():
    text = "A" * 100 + "B" * 1000 + "C" * 100
    out = truncate_middle(text, 300)
    assert out.startswith("A" * 100) and out.endswith("C" * 100)
    assert "[900 characters truncated]" in out
    assert truncate_middle("short", 300) == "short"


def test_format_size():
    assert format_size(512) == "512 B"
    assert format_size(2048) == "2.0 KB"
    assert format_size(5 * 1024 * 1024) == "5.0 MB"
