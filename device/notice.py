"""The research-tool notice, in one place: every screen, model card, report and command line shows it.

The project must never claim clinical validity (README, DESIGN.md); change the wording here and nowhere else.
"""

# The short form: the notice strip of every result screen, CLI help, report headers.
RESEARCH_NOTICE = "Research tool — not a medical device"
# The model card's ``intended_use`` default (written by ``trainer export`` into every new model.json).
INTENDED_USE = (f"{RESEARCH_NOTICE}: results must not be used for diagnosis or treatment decisions; every screening "
                "result needs review by a qualified grader.")
