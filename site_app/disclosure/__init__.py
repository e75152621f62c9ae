"""What may leave the site about its patients: the disclosure policy, the replies it shapes, and the split it protects."""
