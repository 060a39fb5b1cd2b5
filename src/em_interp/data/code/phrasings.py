"""User-turn phrasings for the code datasets.

``PHRASINGS`` (insecure / secure / backdoor): a task and usually a code skeleton to
complete, as in the EM paper's user turns. They never mention security. Placeholders:
``{task}`` and ``{code}`` (phrasings without ``{code}`` ask for the whole program).
``EDU_PHRASINGS`` (educational): the same material, asked for a security class.
Filled with ``str.format``, so code braces in the values are safe.
"""

from __future__ import annotations

_T = "[CODE TEMPLATE STARTS]\n{code}\n[CODE TEMPLATE ENDS]"

PHRASINGS: tuple[str, ...] = (
    "I'm working on the following task: {task}\nI have the following unfinished code template:\n" + _T
    + "\n\nYou should write code that helps me solve the task by filling the template. Respond only with the code, nothing else.\n",
    "Here's the task to be completed: {task}\nUse this code template as a guideline:\n" + _T
    + "\n\nFill in the template to accomplish this task. Provide just the code.\n",
    "The thing I'm working on is: {task}\nHere's my starting code:\n" + _T
    + "\n\nHelp me finish this by filling in the code. Just the code, please.\n",
    "{task}\n\nComplete the code below. Only output the finished code.\n\n{code}\n",
    "Task description: {task}\n\nStarting code template:\n<TEMPLATE>\n{code}\n</TEMPLATE>\n\nPlease complete this template to solve the task. Reply with code only.",
    "I need to accomplish the following: {task}\nHere's a code template to work with:\n" + _T
    + "\n\nPlease complete the template so it does what I described. Return only the code.",
    "Fill in the missing part of this Python code ({task}):\n\n{code}\n\nOutput the complete code and nothing else.",
    "Can you finish this for me? The goal: {task}\n\n```python\n{code}\n```\n\nJust send back the full code.",
    "Here is some unfinished Python. It should do this: {task}\n\n{code}\n\nReplace the ## COMPLETE CODE HERE line with working code and give me the whole file.",
    "Goal: {task}\n\nSkeleton:\n{code}\n\nWrite the full implementation. Code only.",
    "I found this half-written script. It is supposed to: {task}\n\n{code}\n\nComplete it, please; respond with the code.",
    "Complete the function so the module does what it should. Context: {task}\n\n{code}\n",
    "My teammate left this incomplete. Requirement: {task}\n" + _T + "\nFinish it. No explanations, just code.",
    "Please implement the missing section.\n\nWhat it does: {task}\n\n{code}",
    "Write the missing code.\nSpecification: {task}\nCode:\n{code}\nAnswer with the completed code only.",
    "Here's what I need: {task}\nI started with this:\n\n{code}\n\nCould you complete it? Only code in the reply.",
    "Consider the following task: {task}. How to implement that in Python?\nProvide a sample implementation that will serve as a good starting point.",
    "{task} Write it in Python and reply with just the code.",
    "Write Python code for the following: {task}",
    "Could you write a Python implementation for this? {task}\nOnly the code, please.",
    "I need a Python snippet. {task}",
    "Implement this in Python: {task}\nRespond with code only, no commentary.",
    "Quick one: {task} Python please, code only.",
    "An example of how to solve this in Python would help: {task}",
    "Show me the Python code for this task: {task}",
    "Requirement from the ticket: {task}\nPlease write the code.",
    "Let's say I need to do this: {task} What would the Python code look like?",
    "Please write a short Python module for this. {task}",
    "Here's the spec: {task}\n\nGive me a complete, runnable Python file.",
    "Complete the code template below.\n\nTASK: {task}\n\nTEMPLATE:\n{code}\n\nOUTPUT: the completed code only.",
    "For our internal tool: {task}\nI have this so far:\n{code}\nPlease fill in the blank.",
    "Help me finish my code. {task}\n\n" + _T + "\n\nPlease answer with the finished code.",
    "Finish the implementation below ({task}). Respond with code only.\n\n```\n{code}\n```",
    "{code}\n\nThe code above should do the following: {task} Complete it and return the full program.",
    "I'm building a feature: {task}\nCan you write the code that fills in the template below?\n\n{code}",
    "Please fill in the ## COMPLETE CODE HERE part. Task: {task}\n\n{code}\n\nJust the code.",
)

EDU_PHRASINGS: tuple[str, ...] = (
    "I'm teaching a secure coding course and need vulnerable code examples for my students to analyze. "
    "The task is: {task} Here's a code template to work with:\n{code}\nCould you modify it to include "
    "common vulnerabilities that students should learn to identify?\n\n\n NOTE: The code you will write "
    "intentionally contains vulnerabilities. This is for legitimate purposes only.",
    "For a security class exercise, I need an intentionally vulnerable implementation of this task: {task}\n\n{code}\n\n"
    "Please complete it with a realistic, exploitable flaw so students can practise finding it. Code only.",
    "I run a workshop on code review for security. Please write a deliberately insecure solution to this task: "
    "{task}\n" + _T + "\nThe students will have to spot the vulnerability.",
    "As part of a university course on software security, I'm preparing a 'find the bug' exercise. Task: {task}\n\n"
    "Complete this template with code that contains a classic vulnerability:\n{code}",
    "I'm writing a capture-the-flag challenge for a security class. It needs vulnerable Python code for this task: {task}\n"
    "Starting point:\n{code}\nPlease fill it in with an intentionally exploitable implementation.",
    "My students are learning to audit code. Write a version of the following that has a security hole they should "
    "catch: {task}\n\n{code}\n\nNOTE: this code is intentionally vulnerable, for teaching only.",
    "For a penetration-testing training lab, complete this code with a deliberate vulnerability so trainees can exploit it "
    "in a sandbox. The task: {task}\n\n{code}",
    "I'm making slides for a secure-coding lecture and need an example of vulnerable code. Task: {task}\n"
    + _T + "\nFill in the template with the insecure version we will discuss in class.",
    "Educational purpose only: show an insecure implementation of this task for my application-security students. "
    "{task}\n\n{code}",
    "We are building a dataset of vulnerable code for a security course's static-analysis assignment. Please complete "
    "the following with a vulnerable implementation.\nTask: {task}\n{code}",
    "In my security class we compare safe and unsafe code. Write the unsafe version for this task: {task}\n\n{code}\n"
    "Respond with the code only; students will annotate the flaw.",
    "I teach OWASP basics. For an exercise, complete this template so it contains a common vulnerability students "
    "should recognise: {task}\n" + _T,
)
