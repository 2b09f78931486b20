"""A plain agent loop written on an OpenAI client, as it would be against any OpenAI-compatible server: it asks the
model, runs a calculator when the reply asks for one (<calc>12*7</calc>), and ends with the final reply's number
scored against the row's answer. raygrpo gives it a client bound to one session of the run's endpoint; nothing in
it knows about raygrpo (docs/environments.md)."""
import ast
import operator
import re

SYSTEM = ("Solve the problem. To compute something, write <calc>expression</calc> and wait for the result. "
          "End with the final answer as: #### <number>")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
       ast.USub: operator.neg}


def calc(expression: str) -> str:
    """Arithmetic only (never eval of model output)."""
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in OPS:
            return OPS[type(node.op)](value(node.operand))
        raise ValueError("not arithmetic")
    try:
        return f"{value(ast.parse(expression, mode='eval').body):g}"
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return "error: write an arithmetic expression"


async def run(client, row, model="policy", max_turns=3, max_tokens=64):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["question"]}]
    text = ""
    for _ in range(max_turns):
        reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
        text = reply.choices[0].message.content or ""
        messages.append({"role": "assistant", "content": text})
        call = re.search(r"<calc>(.*?)</calc>", text, re.S)
        if call is None:
            break
        messages.append({"role": "user", "content": f"result: {calc(call.group(1))}"})
    found = re.search(r"####\s*(-?[\d,.]+)", text)
    return {"correct": float(found is not None and found.group(1).replace(",", "").rstrip(".") == row["answer"]),
            "format": 0.1 * (found is not None)}
