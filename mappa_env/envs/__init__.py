"""Team environments built on the generic pipeline engine (:mod:`mappa_env.envs.pipeline`)."""
