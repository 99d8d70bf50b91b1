"""The episode viewer: ``python -m mappa_env view PATH`` writes one self-contained HTML page of a run's episodes.

:mod:`.episodes` reads what the page shows (evaluation results, a directory of them, a training run's
episode files) into one list of episodes, each a timeline of actions; :mod:`.page` writes the page.
"""

from mappa_env.viewer.episodes import (EPISODES_FORMAT_VERSION, Collection, ViewError, action_entry, episode_entry,
                                       read_collection, write_episode_file)
from mappa_env.viewer.page import write_page

__all__ = ["EPISODES_FORMAT_VERSION", "Collection", "ViewError", "action_entry", "episode_entry", "read_collection",
           "write_episode_file", "write_page"]
