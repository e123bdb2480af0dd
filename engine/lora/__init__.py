"""LoRA adapters: their ids and checkpoints (:mod:`.adapter`), the store's adapters (:mod:`.store`)
and fine-tuning new ones (:mod:`.finetune`)."""
