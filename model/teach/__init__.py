"""Coursework: a translation explained step by step, the reasons behind a run's numbers (--why), and
seeded quizzes with worked answers.
"""
