"""``cnnlab lecture``: the lecture reproduced section by section (``lecture.report.run_lecture``); each section
module has ``run(section, context)``, which records checks (:mod:`cnnlab.lecture.checks`) from package functions."""
