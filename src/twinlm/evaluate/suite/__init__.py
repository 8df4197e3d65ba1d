"""The field's benchmarks as one suite (`twinlm eval --suite`): GLUE, MS MARCO-trained retrieval
scored on MTEB, the generative ten-task average and WinoGender, each run by Ettin's protocol, so
twinlm's numbers can be laid beside the Ettin paper's tables."""
