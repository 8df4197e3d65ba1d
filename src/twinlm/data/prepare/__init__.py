"""`twinlm prepare`: a corpus becomes a prepared folder of sharded token stores."""
