"""Swiss-Prot concept evaluation: UniProt annotations -> per-residue labels, F1 of every
(feature, concept, threshold), model selection and the test report (DESIGN.md sections 4-5)."""
