from sg2image.cli import app

app(prog_name="sg2image")
