"""``cnnlab explore RUN``: the user's own trained CNN in the browser, offline. :class:`ExploreSession` holds
every view as a function (the core); :func:`create_app` is the web face over it; :func:`serve` runs it."""

from cnnlab.explore.session import ATTRIBUTIONS, MAX_UPLOAD_BYTES, ExploreError, ExploreSession, NotFoundError

__all__ = ["ATTRIBUTIONS", "MAX_UPLOAD_BYTES", "ExploreError", "ExploreSession", "NotFoundError"]
