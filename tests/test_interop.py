"""A finished run is a plain Hugging Face model: it loads and chats with `transformers` alone."""

import json

from conftest import run_micro
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline


def test_a_finished_chat_model_replies_through_a_transformers_pipeline(micro_base, tmp_path):
    # One short conversation, learnt by heart: its reply and the <|im_end|> after it are all the model knows
    data = tmp_path / "hi.jsonl"
    conversation = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there!"}]
    data.write_text("".join(json.dumps({"messages": conversation}) + "\n" for _ in range(32)))
    output_dir = tmp_path / "sft"
    run_micro("sft", micro_base, output_dir, "--data_files", str(data), "--max_steps", "30", "--learning_rate", "1e-2")

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = model.generation_config.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>" and end_of_turn in (stops if isinstance(stops, list) else [stops])

    chat = pipeline("text-generation", model=model, tokenizer=tokenizer)
    output = chat(conversation[:1], max_new_tokens=40, do_sample=False)
    assert output[0]["generated_text"][-1] == {"role": "assistant", "content": "Hi there!"}

    # the pipeline stopped because the model ended its turn, not because it ran out of tokens
    inputs = tokenizer.apply_chat_template(
        conversation[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(**inputs, max_new_tokens=40, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert generated[-1] == end_of_turn and len(generated) < 40
