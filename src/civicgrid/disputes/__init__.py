"""Disputes (矛盾纠纷调处化解): intake at one window, triage, mediation, agreements, follow-up."""
